"""Example data sets made by scripts (nothing downloaded)."""
