with

run_partition as (

    {{ this_runs_partition(source('ml', 'customer_propensity')) }}

),

renamed as (

    select
        person_id,
        purchase_30d_probability,
        purchase_30d_decile,
        churn_90d_probability,
        churn_90d_decile,
        as_of
    from run_partition

)

select * from renamed
