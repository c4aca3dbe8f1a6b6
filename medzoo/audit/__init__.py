"""Dataset audit: exact and near duplicates, cross-split leaks, label conflicts, unreadable files, class balance,
image sizes, a metadata shortcut check and, with `audit.label_issues=true`, suspected label errors (`medzoo audit`)."""
