"""Every resource and IO manager the assets, checks and sensors use; ``environment.py`` wires them."""
