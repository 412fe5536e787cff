"""KAT ui stage."""
