"""Contact-center support desk: one customer, one history, across phone, email and chat."""

__version__ = "0.1.0"
