-- Recency, frequency, monetary value and their 1..5 scores per buyer as of var('as_of').
-- Scoring rules and the segment grid are in _marts__models.yml (model description).

with

orders as (

    select * from {{ ref('fct_orders') }}
    where order_date <= cast('{{ var("as_of") }}' as date)

),

buyers as (

    select
        person_id,
        max(order_date) filter (where is_purchase) as last_order_date,
        count(*) filter (where is_purchase) as frequency,
        cast(sum(net_amount) as decimal(18, 2)) as monetary
    from orders
    where person_id is not null
    group by person_id
    having count(*) filter (where is_purchase) >= 1

),

measured as (

    select
        person_id,
        cast('{{ var("as_of") }}' as date) as as_of,
        date_diff('day', last_order_date, cast('{{ var("as_of") }}' as date)) as recency_days,
        frequency,
        monetary,
        {{ money_per('monetary', 'frequency') }} as avg_order_value,
        last_order_date,
        count(*) over () as buyers_count
    from buyers

),

ranked as (

    -- for each measure: how many buyers are strictly worse (`*_below`) and how many tie (`*_ties`)
    select
        *,
        rank() over (order by recency_days desc) - 1 as recency_below,
        count(*) over (partition by recency_days) as recency_ties,
        rank() over (order by frequency asc) - 1 as frequency_below,
        count(*) over (partition by frequency) as frequency_ties,
        rank() over (order by monetary asc) - 1 as monetary_below,
        count(*) over (partition by monetary) as monetary_ties
    from measured

),

scored as (

    -- mid-rank quintile: score = 1 + floor(5 * (below + ties / 2) / buyers), exact in integers
    select
        *,
        least(5, 1 + (5 * (2 * recency_below + recency_ties)) // (2 * buyers_count)) as r_score,
        least(5, 1 + (5 * (2 * frequency_below + frequency_ties)) // (2 * buyers_count)) as f_score,
        least(5, 1 + (5 * (2 * monetary_below + monetary_ties)) // (2 * buyers_count)) as m_score
    from ranked

),

combined as (

    -- frequency and monetary together, rounded half up: the column of the segment grid
    select
        *,
        (f_score + m_score + 1) // 2 as fm_score
    from scored

),

segmented as (

    select
        person_id,
        as_of,
        recency_days,
        frequency,
        monetary,
        avg_order_value,
        cast(r_score as integer) as r_score,
        cast(f_score as integer) as f_score,
        cast(m_score as integer) as m_score,
        case
            when r_score >= 4 and fm_score >= 4 then 'Champions'
            when r_score >= 4 and fm_score >= 2 then 'Potential loyalist'
            when r_score = 5 then 'New'
            when r_score = 4 then 'Promising'
            when r_score = 3 and fm_score >= 4 then 'Loyal'
            when r_score = 3 and fm_score >= 2 then 'Need attention'
            when fm_score = 5 then 'Cannot lose them'
            when fm_score >= 3 then 'At risk'
            when r_score = 1 then 'Lost'
            else 'Hibernating'
        end as rfm_segment,
        last_order_date
    from combined

)

select * from segmented
