"""CTI bridge: PBX adapters that turn call signalling into normalized call events."""
