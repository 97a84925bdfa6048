{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='as_of',
        full_refresh=false,
    )
}}

-- One row per person per as-of date. A rerun of an as-of date replaces that date's rows as a whole
-- (delete+insert on as_of), so a person merged away since the first run leaves no stale row behind. A history:
-- never rebuilt by --full-refresh (which the marts layer gets for fct_web_sessions, touchpoint/incremental.py).

with

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

final as (

    select
        person_id || ':' || strftime(as_of, '%Y-%m-%d') as rfm_snapshot_id,
        person_id,
        as_of,
        recency_days,
        frequency,
        monetary,
        avg_order_value,
        r_score,
        f_score,
        m_score,
        rfm_segment,
        last_order_date
    from customer_rfm

)

select * from final
