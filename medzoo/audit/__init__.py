"""Dataset audit: exact and near duplicates, cross-split leaks, label conflicts, unreadable files, class balance,
image sizes, and a metadata shortcut check (`medzoo audit`)."""
