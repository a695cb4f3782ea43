"""Route handlers, one module per feature; each handler calls one service method."""
