"""LSTM language-model core (Zaremba et al. 2014). Imports only torch and the standard library
(and, on first use of a tokenizer that needs them, NLTK's Treebank rules or SentencePiece)."""
