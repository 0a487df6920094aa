"""models package of most_speech."""
