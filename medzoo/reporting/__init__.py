"""report.html in every train, eval, predict and audit run directory: one self-contained page (pictures as data
URIs, no network resource) rendered from the Jinja2 templates in `templates/`.

`render.py` fills a template and writes the file; `content.py` gathers what train, eval and predict show,
`audit_content.py` what the audit shows. Commands call `train_report`, `eval_report`, `predict_report` or
`audit_report` at the end of their work (imported from those modules, so that a command loads only its own);
a report that cannot be built is one warning, never a failed command."""
