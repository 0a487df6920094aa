"""vocoder package of most_speech."""
