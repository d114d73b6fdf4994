"""Reading labelled text from files and splitting it."""
