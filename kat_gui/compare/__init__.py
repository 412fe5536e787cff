"""KAT compare stage."""
