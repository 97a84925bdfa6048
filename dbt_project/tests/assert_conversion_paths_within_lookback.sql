-- Every touch on a conversion path is at or before its purchase and at most var('attribution_lookback_days')
-- days before it, and no touch is on the path of a purchase when an earlier purchase of the person came after
-- it (paths start after the previous purchase). Rows returned are touches that break this.

with

paths as (

    select * from {{ ref('fct_conversion_paths') }}

),

purchases as (

    select * from {{ ref('fct_orders') }}
    where is_purchase

),

out_of_window as (

    select
        conversion_path_id,
        'outside the lookback' as problem
    from paths
    where
        seconds_to_conversion < 0
        or seconds_to_conversion > {{ var("attribution_lookback_days") }} * 86400

),

skipped_purchase as (

    select
        paths.conversion_path_id,
        'a purchase between the touch and its purchase' as problem
    from paths
    semi join purchases
        on
            paths.person_id = purchases.person_id
            and paths.touched_at <= purchases.ordered_at
            and paths.ordered_at > purchases.ordered_at

)

select * from out_of_window
union all
select * from skipped_purchase
