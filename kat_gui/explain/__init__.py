"""KAT explain stage."""
