"""HippocampalTransformer experiments: ablations against a plain GPT."""
