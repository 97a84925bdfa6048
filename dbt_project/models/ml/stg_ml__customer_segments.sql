with

run_partition as (

    {{ this_runs_partition(source('ml', 'customer_segments')) }}

),

renamed as (

    select
        person_id,
        segment_id,
        segment_name,
        as_of
    from run_partition

)

select * from renamed
