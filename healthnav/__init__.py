"""healthnav: fine-tune and serve medical language models on Kubernetes."""

__version__ = "0.1.0"
