//! The `passerelle` command line (being written).
