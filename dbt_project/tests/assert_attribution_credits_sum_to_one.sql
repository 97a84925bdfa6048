-- Under every attribution model, the credits of one purchase's touches sum to 1 (attribution_conversions):
-- attribution splits each conversion, it never loses or invents one. Rows returned are purchases that fail.

with

credits as (

    select * from {{ ref('attribution_conversions') }}

),

sums as (

    select
        order_id,
        sum(first_touch_credit) as first_touch,
        sum(last_touch_credit) as last_touch,
        sum(linear_credit) as linear,
        sum(time_decay_credit) as time_decay,
        sum(position_based_credit) as position_based,
        sum(markov_credit) as markov
    from credits
    group by order_id

)

select * from sums
where
    abs(first_touch - 1) > 1e-9
    or abs(last_touch - 1) > 1e-9
    or abs(linear - 1) > 1e-9
    or abs(time_decay - 1) > 1e-9
    or abs(position_based - 1) > 1e-9
    or abs(markov - 1) > 1e-9
