"""Domain operations: what the handlers and loops do to the store, through the storage seam."""
