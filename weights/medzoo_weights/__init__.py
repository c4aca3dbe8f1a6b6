"""The published medzoo checkpoints, one `NAME.safetensors` per zoo entry (float16 weights, the model card in the
file's metadata). medzoo's zoo manifest (medzoo/zoo/published.json) names each file and its sha256; medzoo
finds this folder through the `medzoo.weights` entry point and checks every file against the manifest before
it is used. Nothing here is imported by a checkpoint: the files are data."""
