"""Privacy by design: keyed pseudonyms for direct identifiers, and the keys behind them.

Direct identifiers (email, phone, names, street, birth date, customer and loyalty ids) are turned into stable
pseudonyms with HMAC-SHA256 under a key that lives outside the warehouse and the repository
(`touchpoint.privacy.keys`). The same function runs in Python (`pseudonyms.pseudonym`) and in dbt's DuckDB
(`{{ pseudonym(expr) }}`, set up per connection by `touchpoint.privacy.dbt_plugin`); tests hold them equal.
Publish writes the pseudonymised analytics file and the pii file, the one home of clear identifiers
(`touchpoint.privacy.analytics`); which columns are personal data is `touchpoint.privacy.pii_columns`.
"""
