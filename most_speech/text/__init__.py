"""text package of most_speech."""
