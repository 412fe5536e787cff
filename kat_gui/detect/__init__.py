"""KAT detect stage."""
