"""FAQ articles and their search backends."""
