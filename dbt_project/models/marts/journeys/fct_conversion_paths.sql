-- The ordered touches (fct_touchpoints) before each purchase (fct_orders.is_purchase) of a person. A touch is
-- on the path of the person's first purchase at or after it, if that purchase is at most
-- var('attribution_lookback_days') days later: so each touch counts for one purchase at most, and a path
-- starts after the previous purchase. A store purchase's own visit is the last touch of its path.
--
-- Incremental by person: a daily build deletes and appends again the paths of the persons whose touches or
-- purchases changed (macro record_rederived_conversion_persons), and gives the rebuild's rows
-- (tests/test_incremental_marts.py).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ record_rederived_conversion_persons() }}",
        "{{ conversion_paths_out_of_date() }}",
    ],
    post_hook="{{ remember_conversion_path_inputs() }}",
) }}

{%- set daily = conversion_paths_build_daily() %}

with

touchpoints as (

    select * from {{ ref('fct_touchpoints') }}
    {%- if daily %}
        where {{ is_rederived_conversion_person('person_id') }}
    {%- endif %}

),

purchases as (

    select * from ({{ lookup_purchases(conversion_path_purchase_columns()) }}) as all_purchases
    {%- if daily %}
        where {{ is_rederived_conversion_person('all_purchases.person_id') }}
    {%- endif %}

),

touches_assigned as (

    -- the first purchase at or after each touch, by person: an ordered lookup (asof join), linear in the
    -- touches, never every touch against every purchase of the person
    select
        touchpoints.*,
        purchases.order_id,
        purchases.ordered_at,
        purchases.order_date,
        purchases.order_channel,
        purchases.net_amount
    from touchpoints
    asof inner join purchases
        on
            touchpoints.person_id = purchases.person_id
            and touchpoints.touched_at <= purchases.ordered_at
    where purchases.ordered_at <= touchpoints.touched_at + interval '{{ var("attribution_lookback_days") }} days'

),

numbered as (

    select
        *,
        row_number() over (partition by order_id order by touched_at asc, touchpoint_id asc) as touch_position,
        count(*) over (partition by order_id) as touches_count,
        string_agg(channel, ' > ') over (
            partition by order_id
            order by touched_at asc, touchpoint_id asc
            rows between unbounded preceding and unbounded following
        ) as channel_path
    from touches_assigned

),

final as (

    select
        {{ composite_id(['order_id', 'touchpoint_id']) }} as conversion_path_id,
        order_id,
        person_id,
        ordered_at,
        order_date,
        order_channel,
        net_amount as conversion_value,
        touchpoint_id,
        touch_type,
        channel,
        campaign,
        touched_at,
        touch_position,
        touches_count,
        touch_position = 1 as is_first_touch,
        touch_position = touches_count as is_last_touch,
        date_diff('second', touched_at, ordered_at) as seconds_to_conversion,
        channel_path
    from numbered

)

select * from final
