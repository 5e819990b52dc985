"""gs3: self-supervised encoder pre-training by rendering scene-level 3D Gaussians (GS³)."""

__version__ = "0.1.0"
