{#
  pseudonym(expression): HMAC-SHA256 of the expression as text, 64 hex characters; null stays null.
  The same function as touchpoint.privacy.pseudonyms.pseudonym (tests/test_privacy_pseudonyms.py holds
  them equal). DuckDB has SHA-256 but no HMAC, so HMAC is written out (RFC 2104) over the key's two pads,
  which the privacy plugin (profiles.yml) sets as variables on every connection: the key never appears in
  compiled SQL, dbt's artifacts or the warehouse. Without the plugin the model fails instead of writing nulls.
#}
{% macro pseudonym(expression) -%}
    {%- set text = "cast((" ~ expression ~ ") as varchar)" -%}
    case
        when getvariable('tp_pseudonym_ipad') is null or getvariable('tp_pseudonym_opad') is null
            then error('no pseudonymisation key on this connection: run dbt through touchpoint (privacy plugin)')
        when {{ text }} is null then null
        else sha256(
            getvariable('tp_pseudonym_opad')
            || unhex(sha256(getvariable('tp_pseudonym_ipad') || encode({{ text }})))
        )
    end
{%- endmacro %}
