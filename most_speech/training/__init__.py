"""training package of most_speech."""
