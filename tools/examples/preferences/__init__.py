"""A synthetic preference set whose preferred behaviour a script can check."""
