"""Pusher: ships a blessed model to TF Serving repositories and signed OTA channels, and only then."""
