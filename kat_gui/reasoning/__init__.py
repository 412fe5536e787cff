"""KAT reasoning stage."""
