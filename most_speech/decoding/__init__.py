"""decoding package of most_speech."""
