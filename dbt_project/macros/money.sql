{#
  An amount divided by a count, in exact cents, halves rounded away from zero (64.10 / 4 = 16.03), as
  decimal(18, 2).

  Why not round(total / count, 2): DuckDB divides decimals in floating point, so exact half cents came out
  either way (64.10 / 4 gave 16.02, 653.01 / 2 gave 326.51). Integer arithmetic on cents is exact.
#}
{% macro money_per(total, count) -%}
    cast(
        cast(
            sign({{ total }}) * ((2 * abs(cast({{ total }} * 100 as hugeint)) + {{ count }}) // (2 * {{ count }}))
            as decimal(18, 0)
        ) * cast(0.01 as decimal(3, 2))
        as decimal(18, 2)
    )
{%- endmacro %}
