"""Software-defined assets, one module per layer. Thin: each calls the core in socialrec/."""
