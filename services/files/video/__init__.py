"""Video: metadata probing and thumbnails (PyAV + Pillow), the VideoService and its jobs."""
