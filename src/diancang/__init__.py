"""diancang (智慧典藏): continual, class-incremental named entity recognition.

Importing the package has no side effects: no model, data or argument parsing is loaded here.
"""

__version__ = "0.1.0"
