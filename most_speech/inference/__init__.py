"""inference package of most_speech."""
