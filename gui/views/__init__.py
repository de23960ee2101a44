"""One module per tab of the app (and :mod:`.model` for the header above them).

Each holds its view's logic as plain functions first, which raise ``gr.Error`` for what a user
must fix, then a ``build_tab`` that lays the tab out under the caller's ``gr.Blocks`` and names
every event with ``api_name``. What one tab reads from another (the last Compare answer, the Cost
tab's prices) is passed to its ``build_tab`` explicitly.
"""
