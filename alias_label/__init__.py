"""alias-label-retriever: map an entity's alias to its canonical label and back.

    from alias_label import load_retriever
    retriever = load_retriever("teacher")        # or "student", or a model folder
    retriever.lookup(["UdeG", "MIT"], k=5)       # DataFrame: input_row, query, rank, qid, label, score, ...

Importing the package is cheap: these names load their modules (torch, faiss) on first use.
"""

__all__ = ["Retriever", "load_retriever"]


def __getattr__(name: str):
    if name in __all__:
        from alias_label.search import retriever

        return getattr(retriever, name)
    raise AttributeError(f"module 'alias_label' has no attribute {name!r}")
