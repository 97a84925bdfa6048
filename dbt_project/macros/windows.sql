{#
  The date `date_expr` falls in the `days`-day window that ends on the run's as-of date (as_of included):
  in_last_days('order_date', 30) is true from as_of - 29 to as_of. The one definition of customer_activity's
  (and so customer_360's) 30/90/365-day windows; the ML stage's point-in-time features count the same days
  (an order at most `days` days before the end of the as-of day, ml/features.py).
#}
{% macro in_last_days(date_expr, days) -%}
    {{ date_expr }} between cast('{{ as_of() }}' as date) - {{ days - 1 }} and cast('{{ as_of() }}' as date)
{%- endmacro %}

{#- The partition an ML output table holds for this run's as-of date, not an earlier run's: what the 'scored'
    layer reads, since the ML stage runs just before it in the same run. -#}
{% macro this_runs_partition(relation) -%}
    select * from {{ relation }}
    where as_of = cast('{{ as_of() }}' as date)
{%- endmacro %}
