"""LSTM language-model core (Zaremba et al. 2014). Imports only torch and the standard library."""
