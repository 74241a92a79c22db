"""Recipes: corpora fetched by package name and the default English model built from them."""
