with

run_partition as (

    {{ this_runs_partition(source('ml', 'customer_clv')) }}

),

renamed as (

    select
        person_id,
        frequency as repeat_purchase_days,
        recency as recency_span_days,
        t as age_days,  -- BG/NBD's T: days from the first purchase day to the end of as_of
        monetary_value,
        expected_purchases_90d,
        expected_purchases_365d,
        probability_alive,
        expected_avg_spend,
        clv,
        clv_horizon_days,
        discount_rate,
        as_of
    from run_partition

)

select * from renamed
