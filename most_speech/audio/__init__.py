"""audio package of most_speech."""
