"""The email channel: parsing raw mail, threading it into cases, sending replies."""
