"""Drawing primitives: pictures of samples and of training, as the bytes of image files."""
