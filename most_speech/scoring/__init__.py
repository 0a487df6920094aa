"""scoring package of most_speech."""
