"""data package of most_speech."""
