"""KAT report stage."""
