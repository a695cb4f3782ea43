"""The embedding backends: the ``Embedder`` protocol and its cache (``embeddings``), the
sentence-transformers and ONNX Runtime backends (``onnx``) and the shared types."""
