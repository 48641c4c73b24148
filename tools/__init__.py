"""Developer tools kept apart from the product (never imported by it)."""
