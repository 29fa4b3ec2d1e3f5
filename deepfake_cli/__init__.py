"""deepfake-cli: from a folder of videos to a trained deepfake detector and back to a verdict."""

__version__ = "0.1.0"
